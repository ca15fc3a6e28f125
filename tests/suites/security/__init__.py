"""Security properties: dependency pins, HTTP auth and errors, source scans."""
