"""`hydra/launcher=packed`: a sweep's jobs that differ only in their seeds trained as one model.

From the bottom up: `layers` (every member's weights in one layer) and `monitoring` (Lightning's stopping and
checkpoint rules), the foundations; `member` (one job of a pack), `recipe` (setup, train, cleanup) and
`launcher` (jobs grouped, packs over processes), the packs' own layer (docs/development.md).
"""
