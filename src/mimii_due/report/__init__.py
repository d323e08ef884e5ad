"""Tables, figures and the HTML/Markdown report."""
