"""ElasticLM worker: what runs inside the pods (training, serving, rendezvous store)."""
