"""The payouts service: payees, earnings, commission rules, rates, payout runs and statements."""
