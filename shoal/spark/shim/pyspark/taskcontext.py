"""pyspark.taskcontext under shoal submit."""

from shoal.compute.taskcontext import TaskContext  # noqa: F401
