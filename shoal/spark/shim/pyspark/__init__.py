"""``import pyspark`` under ``shoal submit``: shoal's PySpark-compatible surface."""

from shoal.spark import *  # noqa: F401,F403
from shoal.spark import (  # noqa: F401
    RDD, Accumulator, AccumulatorParam, Broadcast, InheritableThread, SparkConf, SparkContext, SparkFiles, StatCounter,
    StorageLevel, TaskContext,
)
