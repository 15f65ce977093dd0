"""pyspark.conf under shoal submit."""

from shoal.spark.conf import SparkConf  # noqa: F401
