"""Shipping the encoder: LiteRT conversion, agreement, the export report, Table I, QAT."""
