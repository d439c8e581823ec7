"""Pipeline stages: config + input artifacts -> cached, content-addressed output artifact."""
