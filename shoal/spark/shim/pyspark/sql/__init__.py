"""``pyspark.sql`` under ``shoal submit``."""

from shoal.spark.sql import DataFrame, Row, SparkSession  # noqa: F401
