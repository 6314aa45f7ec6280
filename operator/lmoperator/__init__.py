"""ElasticLM operator: elastic language-model training and serving on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("elasticlm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
