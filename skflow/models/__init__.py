"""The torch models estimators hold, all with one protocol (see :mod:`.flow`).

- :mod:`.flow`: :class:`Flow`, :class:`DequantizedFlow`, :class:`MixedFlow`.
- :mod:`.distributions`: base densities (normal, diagonal, mixtures, MADE
  mixture) and the categorical MADE of mixed tables.
- :mod:`.dequantization`: uniform and variational dequantizers.
"""

from .flow import DequantizedFlow, Flow, MixedFlow

__all__ = ["DequantizedFlow", "Flow", "MixedFlow"]
