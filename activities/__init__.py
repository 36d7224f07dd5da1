"""Every side effect of the workflows: the database and the external send API."""
