"""actadd: activation addition, with the instruction vectors it measures from the run's own prompts."""
