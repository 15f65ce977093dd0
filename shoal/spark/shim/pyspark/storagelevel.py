"""pyspark.storagelevel under shoal submit."""

from shoal.compute.storagelevel import StorageLevel  # noqa: F401
