"""pyspark.statcounter under shoal submit."""

from shoal.compute.stats import StatCounter  # noqa: F401
