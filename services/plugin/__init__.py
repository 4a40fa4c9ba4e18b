"""A stage plugin (entry-point group ``winnow.stages``) run as a service."""
