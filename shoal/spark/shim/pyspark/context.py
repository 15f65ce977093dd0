"""pyspark.context under shoal submit."""

from shoal.spark import SparkContext  # noqa: F401
