"""vsyn: video synthesis from a single image.

The method (networks, losses, trainer, data reading, metrics, inference) lives here and imports no infra
package; `shards`, `launcher` and `serve` build on it.
"""

__version__ = "0.1.0"
