"""BiomedCLIP pipeline: PMC figure-caption mining, open_clip pretraining, evaluation, registry.

The package is a library: importing it does no work (no folders, no logging set-up, no tracking
URIs). Entry points (`biomedclip.cli`, `flows/`) configure what they need.
"""

__version__ = "0.1.0"
