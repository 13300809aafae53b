"""The sans-IO core: values, rules and the codec; nothing here imports trio."""
