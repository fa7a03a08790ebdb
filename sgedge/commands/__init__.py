"""One module per `sgedge` verb: its parser (`register(sub)`) and its handler."""
