"""The /_synapse/admin API, compatible with Synapse's for the parts Hearth implements."""
