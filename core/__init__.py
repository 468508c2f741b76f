"""The bottom layer: what every app may rely on and none owns.

- `core.inbound`: the one input boundary (limits, refusal, sanitising, secret scrubbing);
- `core.secrets`: the known secret values that must never be stored or shown;
- `core.transactions`: work that must run last in a transaction (counters, the audit append);
- `core.transient`: which database errors are transient, and how they are answered.
"""
