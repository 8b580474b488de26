"""rar_lite: retrieval-augmented conversational recommendation with reinforcement learning (RAR),
at laptop scale. The companion package of the rar-lite tutorial book."""

__version__ = "0.1.0"
