"""Pipeline stages: each reads files, calls the pure core, and writes its outputs atomically."""
