"""Enrichment: facts added to observations from offline data (GeoIP, fingerprints)."""
