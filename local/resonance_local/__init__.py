"""resonance on a laptop: the `resonance` command, `resonance up`, the reference node server, the
embedded broker and the send/tail tools. The composition root: it depends on the operator and the
bridge; nothing depends on it, and none of it runs in a bridge or operator pod (but the node server,
which the chart's demo runs)."""
