"""SmartNIC match-action pipeline: parser, match stages, actions and deparser."""
