"""pyspark.files under shoal submit."""

from shoal.spark import SparkFiles  # noqa: F401
