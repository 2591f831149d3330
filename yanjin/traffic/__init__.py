"""The traffic store: what serving answered (the prediction log), what people said of it (labels, the
review queue), which texts go to a person (sampling), and how customer text is kept: redacted at the
door, purged after its retention period, erased on request from every copy.

Shared by serving (which writes it, serving.predlog), release, monitoring and retraining (which read
it). Imports no project module but the registry's names and the state folder's layout.
"""
