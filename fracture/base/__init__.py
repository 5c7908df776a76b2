"""Foundation: errors and exit codes, logging, atomic file I/O, output directories, parallel maps."""
