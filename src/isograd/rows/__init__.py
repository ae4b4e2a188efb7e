"""Resumable row outputs, below every pipeline: JSONL row files (`files`), a staged run's
per-stage files (`stagefiles`) and lock (`lock`), torchrun shares and the merge (`ranks`), and
the one row loop (`runner`). Imports nothing from the layers above (torch only under torchrun).
"""
