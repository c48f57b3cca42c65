"""Foundations every layer may use: the generic registry, atomic writes, torch.distributed helpers."""
