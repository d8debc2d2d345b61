NAME = "beta plugin"
