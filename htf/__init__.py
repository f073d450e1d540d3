"""Shared pieces of the Hear The Flow project: typed configs and the shard sample contract."""
