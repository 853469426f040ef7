"""colmed.core: the bottom layer every other colmed package builds on; it imports nothing else of colmed.

- :mod:`colmed.core.errors`: the one-line user-facing errors (file, line, field).
- :mod:`colmed.core.io`: atomic files and directories, JSON/JSONL/YAML reading with located errors.
- :mod:`colmed.core.provenance`: git sha, content hashes, package versions, the manifest every output carries.
"""
