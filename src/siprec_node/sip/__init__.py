"""SIP stack: sans-I/O messages, transactions, dialogs; asyncio transports; the SIPREC handler."""
