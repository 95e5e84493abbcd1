"""The inspection side: read ScaledObject manifests, check them against KEDA's CRDs, ask a scaler as KEDA
would (or start the engine in-process with `--local`), and report what KEDA and the HPA would do.

It sits above the engine: it may import `scaler.*`, and no engine module imports it (tests/test_layering.py).
"""
