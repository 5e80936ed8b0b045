"""Recorder settings: the shared ones are enough."""

from mainspring.settings import Settings

RecorderSettings = Settings
