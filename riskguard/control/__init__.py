"""How decisions leave riskguard: the control topic, and the operators' HTTP API."""
