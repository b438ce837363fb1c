"""Model folders: what a folder says (``spec``), where it comes from (``source``: hub, folder, URI), what
identifies its weights (``identity``), how executors get it (``shipping``), and roles and their prompts."""
