"""IRC network plugin: sans-IO protocol, formatting, address mapping and flood control."""
