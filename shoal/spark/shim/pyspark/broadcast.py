"""pyspark.broadcast under shoal submit."""

from shoal.compute.shared import Broadcast  # noqa: F401
