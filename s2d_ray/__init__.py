"""s2d-ray: System 2 distillation (Yu, Xu, Weston, Kulikov 2024) on Ray.

Pipeline: ``tasks`` (inputs) -> ``programs`` (System 2 methods) -> ``sampling`` (Ray Data +
vLLM, self-consistency ``filters``) -> ``training`` (Ray Train + DeepSpeed) -> ``evaluation``
(report) -> ``serving`` (Ray Serve, OpenAI-compatible).
"""

__version__ = "0.1.0"
