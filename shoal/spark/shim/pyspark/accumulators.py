"""pyspark.accumulators under shoal submit."""

from shoal.compute.shared import Accumulator, AccumulatorParam  # noqa: F401
