NAME = "alpha plugin"
