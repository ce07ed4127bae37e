"""resonance operator: one bridge Deployment per ResonanceNode, with status a user can act on."""

GROUP = "resonance.io"
VERSION = "v1alpha1"
PLURAL = "resonancenodes"
KIND = "ResonanceNode"
