"""Throughput benchmark: BF16 against QAT on the same job (measure, report, record in MLflow)."""
