"""How decisions leave riskguard and who may make them: the control topic, the operators'
HTTP API and web console, people and roles, and four-eyes resume."""
