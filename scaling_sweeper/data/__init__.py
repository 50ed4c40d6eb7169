"""Jet data: sources (Pythia 8, Aspen Open Jets, JetClass), jets parquet, tokenizer, token shards."""
