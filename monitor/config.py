"""Configuration: the YAML file, validated into immutable values.

Imports only `monitor.model`. Loader functions are filled in below the data types.
"""
