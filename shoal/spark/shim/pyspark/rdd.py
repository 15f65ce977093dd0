"""pyspark.rdd under shoal submit."""

from shoal.compute.partitioner import portable_hash  # noqa: F401
from shoal.compute.rdd import RDD  # noqa: F401
