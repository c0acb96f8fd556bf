"""Operations: opening the stores, health and metrics, cache inspection, logging, runtime tuning."""
