"""Every use of a private API of Faust, mode or aiokafka, one module per workaround."""
