from site_client.cli import app

app(prog_name="site-client")
