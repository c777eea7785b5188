"""dpumesh: compile Istio + Kubernetes state into one shared dpu-proxy config per DPU node."""

__version__ = "0.1.0"
